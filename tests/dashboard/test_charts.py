"""The results pictures: SVG a browser draws under the CSP, with every number written out and text escaped."""

import struct
import xml.etree.ElementTree as ET
import zlib

import numpy as np

from dashboard.analysis import Arm, ArmRow, Cost, Group, Routing
from dashboard.charts import Point, group_charts, heatmap, interval_chart, nice_ticks, png

SVG = "{http://www.w3.org/2000/svg}"


def parse(svg: str) -> ET.Element:
    root = ET.fromstring(svg)  # well-formed XML or this raises
    assert root.tag == f"{SVG}svg"
    return root


def texts(svg: str) -> str:
    return " ".join("".join(e.itertext()) for e in parse(svg).iter(f"{SVG}text"))


def no_inline_style_or_script(svg: str) -> bool:
    """Nothing the CSP would block: no style attribute, no event handler, no script element."""
    for element in parse(svg).iter():
        if element.tag == f"{SVG}script" or any(a == "style" or a.startswith("on") for a in element.attrib):
            return False
    return True


def test_ticks_are_round_numbers_that_cover_the_range():
    assert nice_ticks(963.0, 1071.0) == [950, 1000, 1050, 1100]
    assert nice_ticks(1.0, 8.0)[0] <= 1.0 and nice_ticks(1.0, 8.0)[-1] >= 8.0
    assert len(nice_ticks(4.0, 4.0)) >= 2  # one value still gets an axis


def test_an_interval_chart_writes_each_arm_with_its_score_and_interval():
    points = [
        Point("k=1", 1.0, 930.4, 900.2, 961.0, "native context"),
        Point("k=4", 4.0, 1069.6, 1040.0, 1100.9, "native context"),
    ]
    svg = interval_chart(
        points, title="Depth curve", x_label="experts per token", y_label="score", connect=True
    )
    words = texts(svg)
    assert "k=1 930 (900–961)" in words
    assert "k=4 1070 (1040–1101)" in words
    assert "experts per token: 4.0" in words
    root = parse(svg)
    assert len(root.findall(f"{SVG}circle")) == 2
    assert len(root.findall(f"{SVG}polyline")) == 1  # the two depths of one context are joined
    assert no_inline_style_or_script(svg)


def test_arms_of_different_contexts_get_separate_lines_and_a_legend():
    points = [
        Point("k=4", 4.0, 1000, 990, 1010, "native context"),
        Point("k=8", 8.0, 1010, 995, 1020, "native context"),
        Point("k=4 yarn", 4.0, 990, 980, 1000, "YaRN ×4"),
        Point("k=8 yarn", 8.0, 1000, 990, 1010, "YaRN ×4"),
    ]
    svg = interval_chart(points, title="t", x_label="x", y_label="y", connect=True)
    assert len(parse(svg).findall(f"{SVG}polyline")) == 2
    assert "YaRN ×4" in texts(svg) and "native context" in texts(svg)


def test_a_chart_without_data_says_so():
    svg = interval_chart([], title="Quality vs speed", x_label="x", y_label="y", connect=False)
    assert "No votes or no outputs yet." in texts(svg)


def test_hostile_labels_are_escaped_as_text():
    hostile = '<script>alert(1)</script>" onload="x'
    svg = interval_chart(
        [Point(hostile, 1, 2, 1, 3)], title=hostile, x_label=hostile, y_label="y", connect=False
    )
    assert "<script>" not in svg
    assert hostile in texts(svg)  # shown literally
    assert no_inline_style_or_script(svg)


def test_hostile_arm_names_in_a_heatmap_are_escaped_as_text():
    hostile = '<script>alert(1)</script>" onload="x'
    for shares in (np.full((2, 4), 0.25), np.full((48, 128), 1 / 16)):  # rectangles, and one image
        svg = heatmap(shares, title=f"{hostile}: routing", caption=f"more tokens in {hostile}")
        assert "<script>" not in svg
        assert f"{hostile}: routing" in texts(svg) and f"more tokens in {hostile}" in texts(svg)
        assert no_inline_style_or_script(svg)


def test_a_small_heatmap_is_one_cell_per_layer_and_expert_with_percentages():
    shares = np.array([[0.5, 0.25, 0.25, 0.0], [0.1, 0.2, 0.3, 0.4]])
    svg = heatmap(shares, title="k=2: routing")
    root = parse(svg)
    cells = [r for r in root.iter(f"{SVG}rect") if r.get("fill") != "none" and float(r.get("height")) > 10]
    assert len(cells) == 8
    words = texts(svg).split()
    for value in ("50", "25", "0", "10", "40"):
        assert value in words
    assert "layer" in words and "expert" in words
    assert "0%" in words and "50%" in words  # the legend's ends


def test_a_difference_heatmap_is_signed_and_centred_on_white():
    delta = np.array([[0.2, -0.1], [0.0, 0.05]])
    svg = heatmap(delta, title="k=4 minus k=1", diverging=True)
    words = texts(svg)
    assert "+20" in words and "−10" in words and "+0" in words
    fills = [r.get("fill") for r in parse(svg).iter(f"{SVG}rect")]
    assert "#ffffff" in fills  # zero difference


def test_a_large_heatmap_is_one_embedded_image_with_the_same_axes():
    shares = np.random.default_rng(0).random((48, 128)) / 16
    svg = heatmap(shares, title="Qwen3 sized")
    root = parse(svg)
    images = root.findall(f"{SVG}image")
    assert len(images) == 1 and len(root.findall(f"{SVG}rect")) < 20
    assert images[0].get("href").startswith("data:image/png;base64,")
    numbers = texts(svg).split()
    assert "47" in numbers and "127" in numbers  # the last layer and the last expert are labelled
    assert len(svg) < 60_000


def test_png_encodes_the_pixels_it_is_given():
    rgb = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
    data = png(rgb)
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    assert (width, height) == (3, 2)
    length = struct.unpack(">I", data[33:37])[0]
    raw = zlib.decompress(data[41 : 41 + length])
    assert raw == b"\x00" + rgb[0].tobytes() + b"\x00" + rgb[1].tobytes()


def routing(counts, tokens) -> Routing:
    return Routing(np.array(counts), tokens, 1)


def test_a_section_draws_depth_speed_routing_and_the_chosen_difference():
    arms = [
        Arm(0, 10, "k=1", "fixed k=1", "native context"),
        Arm(1, 11, "k=4", "fixed k=4", "native context"),
    ]
    rows = [
        ArmRow(arms[0], 950.0, 920.0, 980.0, 2, 2, 0.3, 40, 4, 1, Cost(6, 210.0, 1.0, 1, 1)),
        ArmRow(arms[1], 1050.0, 1020.0, 1080.0, 1, 1, 0.7, 40, 4, 1, Cost(6, 120.0, 4.0, 4, 4)),
    ]
    group = Group(
        key="routine",
        title="Routine",
        n_votes=40,
        n_ties=4,
        n_both_bad=1,
        verdict={},
        rows=rows,
        matrix=[[None, None], [None, None]],
        position_bias={},
        alpha=None,
        agreement={},
        routing={0: routing([[10, 0], [0, 10]], 10), 1: routing([[10, 10], [10, 10]], 10)},
    )
    pictures = group_charts(group, (arms[0], arms[1]))
    assert "k=4 1050 (1020–1080)" in texts(pictures.depth_curve)
    assert "tokens per second: 120" in texts(pictures.speed)
    assert len(pictures.heatmaps) == 2
    assert "k=4 minus k=1" in texts(pictures.difference)
    assert "+100" in texts(pictures.difference).split()


def test_labels_of_nearby_arms_do_not_overlap():
    points = [
        Point("k=1", 24.2, 934, 918, 951),
        Point("k=8", 25.5, 960, 940, 979),
        Point("k=4", 19.8, 1028, 1008, 1050),
    ]
    svg = interval_chart(points, title="t", x_label="tokens per second", y_label="score", connect=False)
    labels = [e for e in parse(svg).iter(f"{SVG}text") if e.find(f"{SVG}tspan") is not None]
    near = sorted(float(e.get("y")) for e in labels if e.find(f"{SVG}tspan").text in ("k=1", "k=8"))
    assert near[1] - near[0] >= 30
