"""Plain cookies, the cookie section of docs/web/sessions.rst, run as tests.

The page shows the marked part (cookies).
"""

from __future__ import annotations

import peregrine_rt as pr
from peregrine_rt.testing import open_client


# [cookies]
class Theme:
    """``/`` says the theme; ``/theme?set=dark`` remembers one; ``/theme?forget=1`` forgets."""

    async def handle(self, request: pr.Request, response: pr.Response) -> None:
        if request.path == "/theme":
            if request.query.get("forget"):
                response.delete_cookie("theme", path="/")
            else:
                response.set_cookie(
                    "theme",
                    request.query.get("set", "light"),
                    max_age=365 * 24 * 3600,  # seconds; None: until the browser closes
                    path="/",  # sent with every path of the site
                    domain=None,  # this host only ("example.com" would add subdomains)
                    secure=True,  # only over HTTPS
                    httponly=True,  # not readable from page scripts
                    samesite="lax",  # not sent with cross-site POSTs and subrequests
                )
            response.text("ok")
        else:
            # request.cookies: a dict of what the browser sent, first value of each name
            response.text(request.cookies.get("theme", "light"))


# [/cookies]


async def test_a_cookie_is_set_with_every_attribute_and_read_back() -> None:
    async with open_client(Theme) as client:
        assert (await client.get("/")).text == "light"
        answer = await client.get("/theme", params={"set": "dark"})
        assert answer.headers["set-cookie"] == (
            "theme=dark; Max-Age=31536000; Path=/; Secure; HttpOnly; SameSite=Lax"
        )
        assert (await client.get("/", cookies={"theme": "dark"})).text == "dark"
        forget = await client.get("/theme", params={"forget": "1"})
        assert forget.headers["set-cookie"].startswith("theme=; Max-Age=0; Path=/")
