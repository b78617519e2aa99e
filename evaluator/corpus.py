"""Seeded synthetic text corpus in four task categories, written for training the project's tiny MoE.

The text comes from template grammars with many slot fillers: varied enough that a small model has
to learn real structure (agreement between a question and its answer, premises and the conclusion
that follows from them, a fact stated early and recalled much later), regular enough that it can
learn it in a couple of minutes on a CPU. Pure Python, no Django, no third-party imports.
"""

import random
from collections.abc import Callable

CATEGORIES: tuple[str, ...] = ("routine", "dialogue", "philosophy", "long_context")

FIRST_NAMES = (
    "Alice",
    "Ben",
    "Clara",
    "David",
    "Elena",
    "Felix",
    "Grace",
    "Hugo",
    "Irene",
    "James",
    "Karin",
    "Leo",
    "Maya",
    "Nora",
    "Oscar",
    "Paula",
    "Quentin",
    "Rosa",
    "Samuel",
    "Tara",
    "Umar",
    "Vera",
    "Walter",
    "Yara",
    "Zoe",
    "Marta",
    "Tom",
    "Lena",
    "Omar",
    "Sofia",
    "Victor",
    "Hannah",
)
SURNAMES = (
    "Adler",
    "Brooks",
    "Castro",
    "Dunn",
    "Ellis",
    "Fischer",
    "Garcia",
    "Hoffmann",
    "Ito",
    "Jensen",
    "Keller",
    "Lopez",
    "Moreau",
    "Novak",
    "Okafor",
    "Price",
    "Rossi",
    "Schmidt",
    "Tanaka",
    "Weber",
)
TEAMS = ("finance", "design", "support", "sales", "research", "operations", "legal", "marketing")
PROJECTS = (
    "Atlas",
    "Beacon",
    "Cedar",
    "Delta",
    "Ember",
    "Falcon",
    "Granite",
    "Harbor",
    "Iris",
    "Juniper",
    "Kestrel",
    "Lumen",
    "Meridian",
    "Nimbus",
    "Orchid",
    "Pioneer",
)
WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday")
MONTHS = (
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
)
TIMES = ("9:00", "9:30", "10:00", "10:30", "11:00", "13:00", "14:00", "14:30", "15:00", "16:00")
ROOMS = ("Room 2A", "Room 3B", "the small meeting room", "the main conference room", "the library")
DOCUMENTS = (
    "quarterly report",
    "budget draft",
    "project plan",
    "slide deck",
    "contract",
    "travel request",
    "expense report",
    "release notes",
    "hiring plan",
    "customer survey",
)
COLOURS = ("red", "blue", "green", "yellow", "orange", "purple", "grey", "white", "black", "brown")
CITIES = (
    "Lisbon",
    "Oslo",
    "Vienna",
    "Dublin",
    "Prague",
    "Madrid",
    "Warsaw",
    "Zurich",
    "Athens",
    "Helsinki",
    "Lyon",
    "Porto",
    "Milan",
    "Krakow",
    "Bergen",
    "Ghent",
)
COUNTRY_CAPITALS = (
    ("France", "Paris"),
    ("Spain", "Madrid"),
    ("Italy", "Rome"),
    ("Germany", "Berlin"),
    ("Portugal", "Lisbon"),
    ("Norway", "Oslo"),
    ("Austria", "Vienna"),
    ("Ireland", "Dublin"),
    ("Poland", "Warsaw"),
    ("Greece", "Athens"),
    ("Finland", "Helsinki"),
    ("Japan", "Tokyo"),
    ("Canada", "Ottawa"),
    ("Egypt", "Cairo"),
    ("Kenya", "Nairobi"),
    ("Peru", "Lima"),
    ("Chile", "Santiago"),
    ("Sweden", "Stockholm"),
    ("Denmark", "Copenhagen"),
    ("Hungary", "Budapest"),
)
NUMBER_WORDS = (
    "zero",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
    "eleven",
    "twelve",
    "thirteen",
    "fourteen",
    "fifteen",
    "sixteen",
    "seventeen",
    "eighteen",
    "nineteen",
    "twenty",
)


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


def _full_name(rng: random.Random) -> str:
    return f"{rng.choice(FIRST_NAMES)} {rng.choice(SURNAMES)}"


def _date(rng: random.Random) -> str:
    return f"{rng.choice(WEEKDAYS)}, {rng.choice(MONTHS)} {rng.randint(1, 28)}"


# --------------------------------------------------------------------------------------------------
# routine: e-mails, templates, meeting notes, short requests
# --------------------------------------------------------------------------------------------------

GREETINGS = ("Hi {to},", "Hello {to},", "Dear {to},", "Good morning {to},", "Hi {to}, hope you are well.")
CLOSINGS = ("Best regards", "Kind regards", "Thanks", "Many thanks", "Best", "Cheers", "All the best")
OPENINGS = (
    "I hope your week is going well.",
    "Thanks for your message.",
    "Quick note before the weekend.",
    "Following up on our conversation.",
    "I wanted to give you a short update.",
    "",
)


def _email_purposes(rng: random.Random) -> tuple[str, list[str]]:
    """One e-mail purpose: a subject line and the body sentences that belong to it."""
    day, time, room = rng.choice(WEEKDAYS), rng.choice(TIMES), rng.choice(ROOMS)
    new_day, new_time = rng.choice(WEEKDAYS), rng.choice(TIMES)
    doc, project, team = rng.choice(DOCUMENTS), rng.choice(PROJECTS), rng.choice(TEAMS)
    amount = rng.randint(2, 98) * 50
    n = rng.randint(3, 12)
    purposes = [
        (
            f"Meeting moved to {new_day}",
            [
                f"Our meeting on {day} at {time} has to move.",
                f"Could we meet on {new_day} at {new_time} instead?",
                f"The room stays the same: {room}.",
                "Let me know if the new time does not work for you.",
            ],
        ),
        (
            f"{_cap(doc)} for {project}",
            [
                f"Please find attached the {doc} for the {project} project.",
                f"I would be grateful if you could review it by {day}.",
                "The main changes are in the second section.",
                "Feel free to add comments directly in the document.",
            ],
        ),
        (
            f"Approval needed: {doc}",
            [
                f"I need your approval for the {doc} before {day} at {time}.",
                f"The total amount is {amount} euros, which is within the {team} budget.",
                "Once you approve it, I will send it to the finance team.",
                "Please let me know if you have any questions.",
            ],
        ),
        (
            f"Reminder: {doc} due {day}",
            [
                f"This is a friendly reminder that the {doc} is due on {day}.",
                f"So far I have received {n} of the contributions.",
                "If you need more time, please tell me as soon as possible.",
                "Thank you for your help.",
            ],
        ),
        (
            "Thank you",
            [
                f"Thank you for your help with the {project} launch.",
                f"The {team} team really appreciated your support this week.",
                "It made a big difference to the final result.",
                f"Let us celebrate on {day} with a team lunch.",
            ],
        ),
        (
            f"Invoice {rng.randint(1000, 9999)}",
            [
                f"Please find attached the invoice for the work on {project}.",
                f"The amount due is {amount} euros, payable within {n * 5} days.",
                "Bank details are included at the bottom of the invoice.",
                "Do not hesitate to contact me if anything is unclear.",
            ],
        ),
        (
            f"Welcome to the {team} team",
            [
                f"Welcome to the {team} team! We are very happy to have you.",
                f"Your first day starts on {day} at {time} in {room}.",
                f"{rng.choice(FIRST_NAMES)} will show you around and help you set up your laptop.",
                "Please bring an ID so that we can prepare your badge.",
            ],
        ),
        (
            f"Planned maintenance on {day}",
            [
                f"The e-mail server will be down for maintenance on {day} from {time} for {n} hours.",
                "Please save your work and log out before the maintenance starts.",
                f"If you notice any problems afterwards, contact the {team} desk.",
                "We apologise for the inconvenience.",
            ],
        ),
        (
            f"Lunch order for {day}",
            [
                f"I am collecting lunch orders for the workshop on {day}.",
                f"We will be {n} people, so please reply by {time}.",
                "There are vegetarian and vegan options this time.",
                "Thanks for replying quickly.",
            ],
        ),
    ]
    subject, body = rng.choice(purposes)
    return subject, body


def _routine_email(rng: random.Random) -> str:
    to = rng.choice(FIRST_NAMES) if rng.random() < 0.8 else rng.choice(("team", "all", "everyone"))
    sender = _full_name(rng)
    subject, body = _email_purposes(rng)
    opening = rng.choice(OPENINGS)
    keep = body[: rng.randint(2, len(body))]
    lines = [f"Subject: {subject}", "", rng.choice(GREETINGS).format(to=to), ""]
    lines.append(" ".join(s for s in [opening, *keep] if s))
    lines += ["", f"{rng.choice(CLOSINGS)},", sender]
    return "\n".join(lines)


def _routine_notes(rng: random.Random) -> str:
    project = rng.choice(PROJECTS)
    people = rng.sample(FIRST_NAMES, rng.randint(3, 5))
    agenda = [
        ("Budget", ("on track", "slightly over", "approved", "under review")),
        ("Timeline", ("on schedule", "one week late", "moved to next month", "agreed")),
        ("Hiring", ("two candidates left", "offer sent", "paused", "interviews next week")),
        ("Testing", ("all tests pass", "three bugs open", "waiting for data", "started")),
        ("Customer feedback", ("mostly positive", "mixed", "collected", "summary pending")),
        ("Launch", ("ready", "blocked by legal", "planned for Friday", "postponed")),
    ]
    items = rng.sample(agenda, rng.randint(2, 4))
    actions = (
        "send the updated {doc}",
        "book {room} for the review",
        "call the supplier",
        "update the {doc}",
        "share the slides with the {team} team",
        "fix the open bugs",
        "prepare the demo",
        "check the numbers in the {doc}",
    )
    lines = [
        f"Meeting notes: {project} weekly sync",
        f"Date: {_date(rng)}",
        f"Attendees: {', '.join(people)}",
        "",
    ]
    for i, (topic, statuses) in enumerate(items, 1):
        lines.append(f"{i}. {topic}: {rng.choice(statuses)}.")
    lines += ["", "Action items:"]
    for person in rng.sample(people, rng.randint(1, min(3, len(people)))):
        action = rng.choice(actions).format(
            doc=rng.choice(DOCUMENTS), room=rng.choice(ROOMS), team=rng.choice(TEAMS)
        )
        lines.append(f"- {person} will {action} by {rng.choice(WEEKDAYS)}.")
    lines += ["", f"Next meeting: {rng.choice(WEEKDAYS)} at {rng.choice(TIMES)}."]
    return "\n".join(lines)


def _routine_request(rng: random.Random) -> str:
    asks = (
        "send me the {doc} before {time}",
        "book {room} for {day} afternoon",
        "check whether the {doc} is ready",
        "add {name} to the {project} mailing list",
        "move our call to {day} at {time}",
        "print ten copies of the {doc}",
        "forward the {doc} to the {team} team",
    )
    ask = rng.choice(asks).format(
        doc=rng.choice(DOCUMENTS),
        time=rng.choice(TIMES),
        room=rng.choice(ROOMS),
        day=rng.choice(WEEKDAYS),
        name=rng.choice(FIRST_NAMES),
        project=rng.choice(PROJECTS),
        team=rng.choice(TEAMS),
    )
    forms = (
        "Hi {to}, could you please {ask}? Thanks, {me}",
        "{to}, quick request: can you {ask}? Thank you! {me}",
        "Hello {to}, would you be able to {ask}? Much appreciated. {me}",
        "Note to {to}: please {ask}. {me}",
    )
    return rng.choice(forms).format(to=rng.choice(FIRST_NAMES), ask=ask, me=rng.choice(FIRST_NAMES))


def _routine_template(rng: random.Random) -> str:
    name = _full_name(rng)
    email = f"{name.split()[0].lower()}.{name.split()[1].lower()}@example.com"
    start, end = rng.randint(1, 14), rng.randint(15, 28)
    month = rng.choice(MONTHS)
    forms = (
        (
            f"Out of office\n\nThank you for your e-mail. I am away from {month} {start} until {month} {end} "
            f"with limited access to e-mail. For urgent matters, please contact {name} at {email}. "
            "I will reply as soon as I am back."
        ),
        (
            f"Template: meeting invitation\n\nYou are invited to the {rng.choice(PROJECTS)} review on "
            f"{_date(rng)} at {rng.choice(TIMES)} in {rng.choice(ROOMS)}. "
            f"Please confirm your attendance by replying to {email}."
        ),
        (
            f"Template: delivery confirmation\n\nDear customer, your order {rng.randint(10000, 99999)} "
            f"has been shipped and should arrive within {rng.randint(2, 7)} working days. "
            f"If you have any questions, contact us at {email}."
        ),
        (
            "Template: password reset\n\nHello, we received a request to reset the password for your "
            f"account. If this was you, use the link below within {rng.randint(2, 24)} hours. "
            "If it was not you, you can ignore this message."
        ),
    )
    return rng.choice(forms)


def _routine(rng: random.Random) -> str:
    maker = rng.choices(
        (_routine_email, _routine_notes, _routine_request, _routine_template), weights=(5, 3, 2, 2)
    )[0]
    return maker(rng)


# --------------------------------------------------------------------------------------------------
# dialogue: "User: ... / Assistant: ..." turns
# --------------------------------------------------------------------------------------------------

DISHES = {
    "pancakes": (
        "flour, milk, eggs and a pinch of salt",
        "whisk everything into a smooth batter",
        "cook small ladles of batter in a hot pan until golden",
    ),
    "tomato soup": (
        "tomatoes, an onion, garlic and stock",
        "fry the onion and garlic",
        "add the tomatoes and stock, simmer for twenty minutes and blend",
    ),
    "a green salad": (
        "lettuce, cucumber, olive oil and lemon",
        "wash and dry the leaves",
        "slice the cucumber and toss everything with oil and lemon",
    ),
    "fried rice": (
        "cooked rice, eggs, peas and soy sauce",
        "scramble the eggs in a hot pan",
        "add the rice and peas, then season with soy sauce",
    ),
    "an omelette": (
        "eggs, butter, salt and some cheese",
        "beat the eggs with a little salt",
        "pour them into melted butter, add the cheese and fold",
    ),
    "lentil stew": (
        "lentils, carrots, an onion and cumin",
        "soften the onion and carrots",
        "add the lentils, cumin and water and cook for thirty minutes",
    ),
}
DEVICES = {
    "laptop": ("turn on", "hold the power button for ten seconds", "charge it for an hour and try again"),
    "printer": (
        "print",
        "check that it has paper and is connected to the network",
        "restart it and remove any stuck jobs from the queue",
    ),
    "phone": ("charge", "try a different cable and charger", "clean the port carefully"),
    "router": (
        "connect to the internet",
        "unplug it for thirty seconds",
        "check whether the cable from the wall is loose",
    ),
    "headphones": ("pair", "switch Bluetooth off and on again", "forget the device and pair it again"),
}
WORDS = {
    "ephemeral": "lasting for a very short time",
    "candid": "honest and direct",
    "meticulous": "very careful about details",
    "resilient": "able to recover quickly from difficulties",
    "ambiguous": "open to more than one interpretation",
    "frugal": "careful not to spend much money",
    "verbose": "using more words than needed",
    "lucid": "clear and easy to understand",
}
WEATHER = {
    "cold and windy": "a warm coat, a scarf and gloves",
    "hot and sunny": "light clothes, a hat and sunscreen",
    "rainy": "a waterproof jacket and boots",
    "mild and cloudy": "a light sweater",
    "snowy": "boots, a thick coat and a hat",
}


def _turn_capital(rng: random.Random) -> tuple[str, str]:
    country, capital = rng.choice(COUNTRY_CAPITALS)
    q = rng.choice(
        (
            f"What is the capital of {country}?",
            f"Which city is the capital of {country}?",
            f"Do you know the capital of {country}?",
        )
    )
    return q, rng.choice((f"The capital of {country} is {capital}.", f"It is {capital}."))


def _turn_arithmetic(rng: random.Random) -> tuple[str, str]:
    a, b = rng.randint(0, 10), rng.randint(0, 10)
    if rng.random() < 0.5:
        return f"What is {a} plus {b}?", f"{a} plus {b} is {a + b}."
    wa, wb = NUMBER_WORDS[a], NUMBER_WORDS[b]
    return f"What is {wa} plus {wb}?", f"{_cap(wa)} plus {wb} is {NUMBER_WORDS[a + b]}."


def _turn_recipe(rng: random.Random) -> tuple[str, str]:
    dish = rng.choice(sorted(DISHES))
    needs, first, then = DISHES[dish]
    q = rng.choice((f"How do I make {dish}?", f"Can you give me a simple recipe for {dish}?"))
    return q, f"To make {dish}, you need {needs}. First, {first}. Then {then}."


def _turn_device(rng: random.Random) -> tuple[str, str]:
    device = rng.choice(sorted(DEVICES))
    verb, fix, fix2 = DEVICES[device]
    q = rng.choice((f"My {device} will not {verb}.", f"Help, my {device} does not {verb} anymore."))
    return q, f"I am sorry to hear that. First, {fix}. If that does not work, {fix2}."


def _turn_word(rng: random.Random) -> tuple[str, str]:
    word = rng.choice(sorted(WORDS))
    q = rng.choice((f"What does {word} mean?", f"Can you define the word {word}?"))
    return q, f"{_cap(word)} means {WORDS[word]}."


def _turn_weather(rng: random.Random) -> tuple[str, str]:
    weather = rng.choice(sorted(WEATHER))
    return f"What should I wear if it is {weather} today?", f"If it is {weather}, wear {WEATHER[weather]}."


def _turn_booking(rng: random.Random) -> tuple[str, str]:
    n, time, day = rng.randint(2, 8), rng.choice(TIMES), rng.choice(WEEKDAYS)
    place = rng.choice(("the Blue Door", "Casa Verde", "the Old Mill", "Luna Bistro", "the Harbor Cafe"))
    return (
        f"Can you book a table for {n} on {day} at {time}?",
        f"Sure. I have booked a table for {n} people at {place} on {day} at {time}.",
    )


def _turn_travel(rng: random.Random) -> tuple[str, str]:
    a, b = rng.sample(CITIES, 2)
    hours = rng.randint(2, 9)
    return (
        f"How long does the train from {a} to {b} take?",
        f"The train from {a} to {b} takes about {hours} hours.",
    )


TURNS: tuple[Callable[[random.Random], tuple[str, str]], ...] = (
    _turn_capital,
    _turn_arithmetic,
    _turn_recipe,
    _turn_device,
    _turn_word,
    _turn_weather,
    _turn_booking,
    _turn_travel,
)


def _dialogue(rng: random.Random) -> str:
    lines: list[str] = []
    name = rng.choice(FIRST_NAMES) if rng.random() < 0.3 else None
    if name:
        hello = rng.choice((f"Hello {name}! How can I help you today?", f"Nice to meet you, {name}."))
        lines += [f"User: Hi, my name is {name}.", f"Assistant: {hello}"]
    for _ in range(rng.randint(1, 3)):
        q, a = rng.choice(TURNS)(rng)
        lines += [f"User: {q}", f"Assistant: {a}"]
    if name and rng.random() < 0.7:
        lines += ["User: Do you remember my name?", f"Assistant: Yes, your name is {name}."]
    if rng.random() < 0.5:
        thanks = rng.choice(("Thanks!", "Thank you, that helps.", "Great, thanks."))
        welcome = rng.choice(("You are welcome.", "Glad I could help.", "Happy to help. Anything else?"))
        lines += [f"User: {thanks}", f"Assistant: {welcome}"]
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------------
# philosophy: arguments, premises, objections, conclusions
# --------------------------------------------------------------------------------------------------

# Clauses that can stand as premises; each is a plain declarative sentence without final punctuation.
CLAUSES = (
    "knowledge requires certainty",
    "we know very little about the world",
    "our senses can deceive us",
    "every event has a cause",
    "our choices are determined by prior events",
    "we are not free",
    "we are morally responsible for our actions",
    "the mind is identical to the brain",
    "pain is a physical state",
    "a person is the same over time",
    "memory grounds personal identity",
    "moral facts exist",
    "some actions are wrong in themselves",
    "happiness is the only good",
    "pleasure is always valuable",
    "justice requires equality",
    "the state needs the consent of citizens",
    "time flows",
    "the past is fixed",
    "beauty is in the eye of the beholder",
    "art expresses emotion",
    "language shapes thought",
    "numbers exist independently of us",
    "the world is more than what we perceive",
    "animals have moral status",
    "lying is always wrong",
    "we ought to maximise wellbeing",
    "virtue can be taught",
    "reason can justify belief in God",
    "the self is an illusion",
)
THESES = {
    "free will": (
        "free will is compatible with determinism",
        "to act freely is to act from one's own reasons, even if those reasons have causes",
        "a person can be praised or blamed for what she does",
        "a person could not have done otherwise, so her reasons were not really her own",
        "the ability to do otherwise is not what matters; what matters is that the act flows from the agent",
        "what we mean by 'could have done otherwise'",
    ),
    "knowledge": (
        "knowledge is justified true belief",
        "we usually call a belief knowledge when it is true and we have good reasons for it",
        "most of our everyday beliefs count as knowledge",
        "a belief can be true and justified by luck alone",
        "the justification must be connected to the truth in the right way",
        "how we should understand the role of luck",
    ),
    "personal identity": (
        "a person persists over time because of psychological continuity",
        "what makes me the same person as my younger self is a chain of memories and intentions",
        "surviving is a matter of degree",
        "memories can be false or copied into another person",
        "only memories caused in the right way count",
        "what it is for a memory to be caused in the right way",
    ),
    "ethics": (
        "the right action is the one that produces the most happiness",
        "everyone's happiness counts equally, so we should do the most good we can",
        "we may sometimes break a promise to help strangers",
        "this view allows us to harm an innocent person if the numbers are large enough",
        "rules that protect the innocent themselves produce the most happiness over time",
        "whether rules or single acts are what we should evaluate",
    ),
    "mind": (
        "the mind is a pattern of functional states",
        "what makes something a belief or a pain is the role it plays in a system",
        "a machine could in principle have a mind",
        "a system could play all the right roles without feeling anything",
        "feeling just is playing the right role, described from the inside",
        "whether experience can be fully described in terms of function",
    ),
    "justice": (
        "a just society is one that free and equal people would choose",
        "fair rules are those we would accept without knowing our place in society",
        "inequalities are allowed only when they help the least advantaged",
        "people deserve what they earn by their own talent and effort",
        "talent itself is a matter of luck, so nobody deserves it",
        "what we can be said to deserve",
    ),
}
THINKERS = (
    "the compatibilist",
    "the sceptic",
    "the utilitarian",
    "the dualist",
    "the realist",
    "the critic",
    "the empiricist",
    "the rationalist",
    "the pragmatist",
)
SCENARIOS = (
    (
        "a ship whose planks are replaced one by one until none of the original planks remain",
        "is it still the same ship",
    ),
    (
        "a machine that gives you any experience you want while you float in a tank",
        "should you plug in for the rest of your life",
    ),
    (
        "a runaway trolley that will kill five people unless you pull a lever that sends it "
        "towards one person",
        "should you pull the lever",
    ),
    (
        "a person who is teleported by being scanned, destroyed and rebuilt on Mars",
        "does the person on Mars survive as you",
    ),
    (
        "a scientist who knows every physical fact about colour but has only ever seen black and white",
        "does she learn something new when she first sees red",
    ),
    (
        "a room where someone follows rules to answer questions in a language he does not understand",
        "does the room understand the language",
    ),
)


def _phil_formal(rng: random.Random) -> str:
    p, q, r = rng.sample(CLAUSES, 3)
    form = rng.randrange(4)
    if form == 0:
        name, premises, conclusion = "modus ponens", [f"If {p}, then {q}.", f"{_cap(p)}."], f"{_cap(q)}."
    elif form == 1:
        name = "modus tollens"
        premises = [f"If {p}, then {q}.", f"It is not the case that {q}."]
        conclusion = f"It is not the case that {p}."
    elif form == 2:
        name = "hypothetical syllogism"
        premises = [f"If {p}, then {q}.", f"If {q}, then {r}."]
        conclusion = f"If {p}, then {r}."
    else:
        name = "disjunctive syllogism"
        premises = [f"Either {p} or {q}.", f"It is not the case that {p}."]
        conclusion = f"{_cap(q)}."
    lines = [f"Argument ({name})"]
    lines += [f"Premise {i}: {premise}" for i, premise in enumerate(premises, 1)]
    lines.append(f"Conclusion: Therefore, {conclusion[0].lower()}{conclusion[1:]}")
    if rng.random() < 0.6:
        lines.append(
            rng.choice(
                (
                    "The argument is valid: if the premises are true, the conclusion must be true.",
                    "The form is valid, so anyone who rejects the conclusion must reject a premise.",
                    f"The argument is valid, but a critic may deny that {p}.",
                    "Whether the argument is sound depends on whether the premises are true.",
                )
            )
        )
    return "\n".join(lines)


def _phil_essay(rng: random.Random) -> str:
    topic = rng.choice(sorted(THESES))
    thesis, reason, consequence, objection, reply, crux = THESES[topic]
    holder, critic = rng.sample(THINKERS, 2)
    parts = [
        rng.choice(
            (
                f"Consider the view that {thesis}.",
                f"On the question of {topic}, many philosophers hold that {thesis}.",
                f"A central claim about {topic} is that {thesis}.",
            )
        ),
        f"{_cap(holder)} argues that {reason}.",
        f"On this view, {consequence}.",
        rng.choice((f"One objection is that {objection}.", f"{_cap(critic)} objects that {objection}.")),
        rng.choice(
            (
                f"In reply, {holder} can say that {reply}.",
                f"A possible reply is that {reply}.",
            )
        ),
        rng.choice(
            (
                f"Whether this reply succeeds depends on {crux}.",
                f"So the debate turns on {crux}.",
                f"The reply is promising, but it leaves open {crux}.",
            )
        ),
    ]
    return f"Topic: {topic}\n\n" + " ".join(parts)


def _phil_thought_experiment(rng: random.Random) -> str:
    scenario, question = rng.choice(SCENARIOS)
    yes = rng.choice(
        (
            "we must explain what makes the answer true",
            "we accept a surprising consequence",
            "our ordinary concept is more flexible than it seems",
        )
    )
    no = rng.choice(
        (
            "we must say what is missing",
            "our intuition conflicts with a simple theory",
            "something beyond the physical facts seems to matter",
        )
    )
    lesson = rng.choice(
        (
            "our intuitions need a theory",
            "the concept has vague edges",
            "the answer depends on what we care about",
        )
    )
    return (
        f"Thought experiment\n\nImagine {scenario}. The question is: {question}? "
        f"If we answer yes, {yes}. If we answer no, {no}. "
        f"{_cap(rng.choice(THINKERS))} says {rng.choice(('yes', 'no'))}, but the case shows that {lesson}."
    )


def _philosophy(rng: random.Random) -> str:
    maker = rng.choices((_phil_formal, _phil_essay, _phil_thought_experiment), weights=(5, 4, 2))[0]
    return maker(rng)


# --------------------------------------------------------------------------------------------------
# long_context: long documents with facts, then a question that recalls one of them
# --------------------------------------------------------------------------------------------------

ROLES = (
    "courier",
    "night guard",
    "captain",
    "librarian",
    "pilot",
    "engineer",
    "archivist",
    "cook",
    "doctor",
    "gardener",
    "driver",
    "clerk",
)
ATTRIBUTES = ("code", "locker number", "badge number", "room number", "radio channel", "pass number")
PLACES = ("archive", "workshop", "boathouse", "storeroom", "tower", "cellar", "greenhouse", "garage")
HIDING = (
    "under the blue mat",
    "in the top drawer",
    "behind the clock",
    "in a tin on the shelf",
    "with the harbour master",
    "in the glovebox",
    "inside the old piano",
    "at the front desk",
)
ITEMS = ("apples", "lamps", "books", "blankets", "tools", "candles", "maps", "radios", "batteries")
DOC_KINDS = (
    "Field report",
    "Station log",
    "Travel diary",
    "Harbour record",
    "Expedition notes",
    "Village chronicle",
)
# Filler pairs a subject only with predicates that fit it, so the padding text stays plausible.
FILLER_WEATHER = (
    ("The morning", "The afternoon", "The evening", "The weather", "The day"),
    (
        "was quiet and grey",
        "brought a light rain from the west",
        "stayed calm until noon",
        "was cold but clear",
        "turned windy after lunch",
        "was warmer than the day before",
    ),
)
FILLER_PLACES = (
    ("The road to the village", "The old bridge", "The harbour", "The market", "The station", "The square"),
    (
        "was busy with carts and traders",
        "needed repairs after the storm",
        "smelled of salt and wood smoke",
        "was covered in fresh snow",
        "was empty except for a few cats",
        "looked smaller than we remembered",
    ),
)
FILLER_EVENTS = (
    "We checked the supplies and wrote down what was missing.",
    "Two visitors arrived and asked for directions to the hill.",
    "The radio worked only for a few minutes at a time.",
    "Someone fixed the door of the shed with new hinges.",
    "The dog slept by the stove for most of the day.",
    "We walked along the coast and counted the birds.",
    "A letter came from the city with news of the election.",
    "The lights flickered twice during dinner.",
    "We cleaned the windows and swept the yard.",
    "The children played near the water until sunset.",
    "A fishing boat returned late with an empty net.",
    "The baker gave us fresh bread for the journey.",
    "Nobody mentioned the accident from last winter.",
    "We spent an hour sorting old papers in the office.",
    "The path to the lighthouse was blocked by fallen rocks.",
    "A neighbour lent us a ladder to reach the roof.",
    "The ferry was cancelled because of the waves.",
    "We repaired a broken chair and painted the fence.",
    "An old man told us stories about the mine.",
    "The water pump made a strange noise all night.",
    "We ate soup and bread in the warm kitchen.",
    "A cat followed us all the way to the post office.",
    "The teacher asked us to speak to her class.",
    "We found a box of letters under the stairs.",
    "The bus was late, so we walked to the square.",
    "Somebody left a basket of plums at the door.",
    "The bells of the church rang at six.",
    "We wrote a list of repairs for the spring.",
    "The shop closed early for a wedding.",
    "A doctor from the next valley stayed for dinner.",
    "The generator ran out of fuel before midnight.",
    "We carried wood from the shed to the house.",
)


def _fact(rng: random.Random, used: set[str]) -> tuple[str, str, str, str]:
    """A fact about a not-yet-used subject: (key, statement, question, answer)."""
    while True:
        kind = rng.randrange(5)
        if kind == 0:
            role, attr = rng.choice(ROLES), rng.choice(ATTRIBUTES)
            key, value = f"{role}/{attr}", str(rng.randint(1000, 9999))
            fact = (f"The {role}'s {attr} is {value}.", f"What is the {role}'s {attr}?", value)
        elif kind == 1:
            place = rng.choice(PLACES)
            key, value = f"key/{place}", rng.choice(HIDING)
            fact = (
                f"The key to the {place} is kept {value}.",
                f"Where is the key to the {place} kept?",
                value,
            )
        elif kind == 2:
            name = rng.choice(FIRST_NAMES)
            key, value = f"colour/{name}", rng.choice(COLOURS)
            fact = (f"{name}'s favourite colour is {value}.", f"What is {name}'s favourite colour?", value)
        elif kind == 3:
            city = rng.choice(CITIES)
            key, value = f"train/{city}", str(rng.randint(1, 12))
            fact = (
                f"The train to {city} leaves from platform {value}.",
                f"Which platform does the train to {city} leave from?",
                f"Platform {value}",
            )
        else:
            item = rng.choice(ITEMS)
            key, value = f"crates/{item}", str(rng.randint(2, 60))
            fact = (
                f"The shipment contains {value} crates of {item}.",
                f"How many crates of {item} are in the shipment?",
                value,
            )
        if key not in used:
            used.add(key)
            return key, *fact


def _filler(rng: random.Random, n: int) -> list[str]:
    """``n`` different filler sentences: the padding between facts, plausible and never repeated."""
    sentences: list[str] = []
    events = rng.sample(FILLER_EVENTS, len(FILLER_EVENTS))
    while len(sentences) < n:
        if events and rng.random() < 0.5:
            sentence = events.pop()
        else:
            subjects, predicates = rng.choice((FILLER_WEATHER, FILLER_PLACES))
            sentence = f"{rng.choice(subjects)} {rng.choice(predicates)}."
        if sentence not in sentences:
            sentences.append(sentence)
    return sentences


def _long_context(rng: random.Random) -> str:
    n_sentences = rng.randint(8, 34)
    used: set[str] = set()
    facts = [_fact(rng, used) for _ in range(rng.randint(3, 6))]
    sentences = _filler(rng, n_sentences)
    # Facts sit anywhere in the first four fifths, so the question is always well after its answer.
    for _, statement, _, _ in facts:
        sentences.insert(rng.randint(0, int(len(sentences) * 0.8)), statement)
    paragraphs, current = [], []
    for sentence in sentences:
        current.append(sentence)
        if len(current) >= rng.randint(4, 7):
            paragraphs.append(" ".join(current))
            current = []
    if current:
        paragraphs.append(" ".join(current))
    title = f"{rng.choice(DOC_KINDS)}, {rng.choice(CITIES)}, {rng.choice(MONTHS)} {rng.randint(1, 28)}"
    asked = rng.sample(facts, rng.randint(1, 2))
    qa = [f"Question: {question}\nAnswer: {answer}" for _, _, question, answer in asked]
    return f"{title}\n\n" + "\n\n".join(paragraphs) + "\n\n" + "\n\n".join(qa)


GENERATORS: dict[str, Callable[[random.Random], str]] = {
    "routine": _routine,
    "dialogue": _dialogue,
    "philosophy": _philosophy,
    "long_context": _long_context,
}


def generate_corpus(*, seed: int, n_docs: int) -> list[tuple[str, str]]:
    """Return ``n_docs`` (category, text) pairs; the same seed always gives the same list.

    Each run of four consecutive documents holds one document of every category in a random order,
    so any prefix of the list (a training slice, a held-out slice) is balanced to within one document.
    """
    rng = random.Random(seed)
    categories: list[str] = []
    while len(categories) < n_docs:
        block = list(CATEGORIES)
        rng.shuffle(block)
        categories += block
    return [(category, GENERATORS[category](rng)) for category in categories[:n_docs]]
