"""One api3 call's life in the server: what it was, and the turns it holds until its answer is out.

Why apart from app.py: a turn of the server (serve/fairness.py) must cover everything the
server does for a request, its answer sent and counted included, and only the ASGI
response itself sees the end of that; these small pieces make sure every turn a request
took is given back exactly once, whatever happens while sending.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from starlette.responses import Response


@dataclass
class Call:
    """What the request log and metrics need to know of one api3 call."""

    method: str = "invalid"
    outcome: str = "fault"
    params: list[Any] = field(default_factory=list)
    #: Turns of the server this request ends with: given back once its answer has gone
    #: out and been counted (`Answering`), so the turn covers the whole cost of a request.
    turns: list[Any] = field(default_factory=list)

    finished: bool = False

    def hold(self, turn: Any) -> None:
        """Keep `turn` until the answer is out; a run that outlived its request (a shared
        read whose first caller left) gives it back at once."""
        if self.finished:
            turn.release()
        else:
            self.turns.append(turn)

    def release_turns(self) -> None:
        self.finished = True
        for turn in self.turns:
            turn.release()
        self.turns.clear()


def let_go(e: BaseException) -> None:
    """Drop a handled exception's traceback before the request goes on to the site: its
    frames (one of them holds the exception) would otherwise make a reference cycle per
    passed-through read, freed only by the collector's stop-the-loop passes."""
    e.__traceback__ = None


class Answering:
    """An ASGI response that gives its request's turns back once it has been sent (and its
    background bookkeeping done), whatever happens while sending: a caller's turns then
    bound everything the server does for it, not just the part before the answer, so many
    quickly answered requests of one caller (identical reads joining one run) cannot fill
    the event loop ahead of other callers."""

    def __init__(self, response: Response, call: Call) -> None:
        self.response = response
        self.call = call

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await self.response(scope, receive, send)
        finally:
            self.call.release_turns()
