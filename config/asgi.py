"""ASGI entry point: Django over HTTP and the Channels consumers over WebSocket."""

import os

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
django.setup(set_prefix=False)  # as django.core.asgi.get_asgi_application does

from config.handler import SyncASGIHandler  # noqa: E402  (needs the apps loaded first)

django_asgi_app = SyncASGIHandler()

from channels.auth import AuthMiddlewareStack  # noqa: E402  (needs the apps loaded first)
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402

from dashboard.routing import websocket_urlpatterns  # noqa: E402

application = ProtocolTypeRouter(
    {
        "http": django_asgi_app,
        "websocket": AllowedHostsOriginValidator(AuthMiddlewareStack(URLRouter(websocket_urlpatterns))),
    }
)
