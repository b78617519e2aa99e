"""`python -m config.daphne_server` is daphne's command line, with one change: Twisted does not parse
form bodies.

Twisted's HTTP request parses every urlencoded POST body into `request.args`, and it reads the
Content-Type header through the `email` package to decide: 6% of a web process's time on the rating loop,
where every vote is a form POST. Daphne never reads `request.args` (Django parses the body from the ASGI
message), so its requests are built with Twisted's `parsePOSTFormSubmission=False`.
"""

from daphne import http_protocol, server
from daphne.cli import CommandLineInterface


class WebRequest(http_protocol.WebRequest):
    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, parsePOSTFormSubmission=False, **kwargs)


class HTTPFactory(http_protocol.HTTPFactory):
    def buildProtocol(self, addr):
        protocol = super().buildProtocol(addr)
        protocol.requestFactory = WebRequest
        return protocol


def main() -> None:
    server.HTTPFactory = HTTPFactory  # the name daphne's Server builds its factory from
    CommandLineInterface.entrypoint()


if __name__ == "__main__":
    main()
