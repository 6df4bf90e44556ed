"""The ASGI lifespan protocol: let the app set up before requests and clean up after.

``Lifespan(app, mode, state)`` runs ``app({"type": "lifespan", ...}, receive, send)`` as
a task for the life of the worker. :meth:`Lifespan.startup` sends
``lifespan.startup`` and returns once the app answers ``lifespan.startup.complete``;
:meth:`Lifespan.shutdown` does the same with ``lifespan.shutdown``.

Modes (``app.lifespan``):

* ``auto`` — if the app raises, or returns, before taking the start-up message, it
  does not support lifespan: note it in the log and serve without it (what uvicorn
  does). If it took the message and then raised (other than by sending an ``http.*``
  message, which an app without lifespan support would), its start-up failed.
* ``on`` — the same situations are a start-up failure.
* ``off`` — never run it.

``lifespan.startup.failed`` always raises :class:`LifespanFailure` with the app's
message; the worker reports it and bastion stops with that message. Start-up and
shut-down have no timeout here: the supervisor bounds them (``workers.startup_timeout``
and ``workers.graceful_timeout``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, Literal

Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[MutableMapping[str, Any], Receive, Send], Awaitable[None]]

__all__ = ["Lifespan", "LifespanFailure"]

log = logging.getLogger("bastion.error")


class LifespanFailure(Exception):
    """The app reported (or caused) a failed lifespan start-up or shut-down."""


class Lifespan:
    """Drives one app's lifespan protocol. ``supported`` tells whether it took part."""

    def __init__(
        self, app: ASGIApp, mode: Literal["auto", "on", "off"], state: dict[str, Any]
    ) -> None:
        self.app = app
        self.mode = mode
        self.state = state
        self.supported = False
        self._task: asyncio.Task[None] | None = None
        self._inbox: asyncio.Queue[Message] = asyncio.Queue()
        self._answer: asyncio.Future[Message] | None = None
        self._phase = "idle"  # idle, startup, running, shutdown, done
        self._error: BaseException | None = None
        self._started_receiving = False  # the app has taken a message from receive()
        self._foreign = False  # the app sent a message that is not lifespan (an http app)

    async def startup(self) -> None:
        """Run the app's start-up. Raises :class:`LifespanFailure` if it failed."""
        if self.mode == "off":
            return
        loop = asyncio.get_running_loop()
        scope: MutableMapping[str, Any] = {
            "type": "lifespan",
            "asgi": {"version": "3.0", "spec_version": "2.0"},
            "state": self.state,
        }
        self._phase = "startup"
        self._answer = loop.create_future()
        self._task = loop.create_task(self._main(scope))
        await self._inbox.put({"type": "lifespan.startup"})
        answer = await self._answer
        kind = answer["type"]
        if kind == "lifespan.startup.complete":
            self.supported = True
            self._phase = "running"
            return
        if kind == "lifespan.startup.failed":
            self._phase = "done"
            raise LifespanFailure(_message(answer, "lifespan start-up failed"))
        # the app ended (or raised) without answering
        self._phase = "done"
        err = self._error
        if self.mode == "on":
            what = f"raised {_one_line(err)}" if err is not None else "returned"
            raise LifespanFailure(
                f"lifespan start-up failed: the app {what} before completing start-up "
                "(app.lifespan is 'on')"
            )
        if err is not None and self._speaks_lifespan():
            # it took the start-up message and answered nothing foreign: its start-up broke
            raise LifespanFailure(
                f"lifespan start-up failed: {_one_line(err)} (if the app does not support "
                "ASGI lifespan, set app.lifespan = 'off')"
            )
        if err is not None:
            log.info("ASGI lifespan not supported by the app (it raised %s)", _one_line(err))
        else:
            log.info("ASGI lifespan not supported by the app (it returned at once)")

    async def shutdown(self) -> None:
        """Run the app's shut-down. Raises :class:`LifespanFailure` if it reported failure."""
        if not self.supported or self._task is None or self._phase != "running":
            return
        self._phase = "shutdown"
        if self._task.done():
            log.error("ASGI lifespan task ended before shut-down; nothing to run")
            return
        self._answer = asyncio.get_running_loop().create_future()
        await self._inbox.put({"type": "lifespan.shutdown"})
        answer = await self._answer
        self._phase = "done"
        kind = answer["type"]
        if kind == "lifespan.shutdown.complete":
            done, _ = await asyncio.wait([self._task], timeout=1.0)
            if not done:  # the app answered but keeps running: stop it
                self._task.cancel()
                await asyncio.wait([self._task], timeout=1.0)
            return
        if kind == "lifespan.shutdown.failed":
            message = _message(answer, "lifespan shut-down failed")
            log.error("ASGI lifespan shut-down failed: %s", message)
            raise LifespanFailure(message)
        err = self._error
        what = f"raised {_one_line(err)}" if err is not None else "returned"
        log.error("ASGI lifespan: the app %s during shut-down", what)
        raise LifespanFailure(f"lifespan shut-down failed: the app {what}")

    # -- the app's side -------------------------------------------------------------
    async def _main(self, scope: MutableMapping[str, Any]) -> None:
        try:
            await self.app(scope, self._receive, self._send)
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            self._error = exc
            if self._phase in ("running", "shutdown") or (
                self._phase == "startup" and (self.mode == "on" or self._speaks_lifespan())
            ):
                log.error(
                    "exception in ASGI lifespan (%s)",
                    self._phase,
                    exc_info=(type(exc), exc, exc.__traceback__),
                )
            if not isinstance(exc, Exception):
                raise
        finally:
            self._settle({"type": "lifespan.ended"})

    async def _receive(self) -> Message:
        message = await self._inbox.get()
        self._started_receiving = True
        return message

    async def _send(self, message: Message) -> None:
        try:
            kind = message["type"]
        except (TypeError, KeyError):
            raise RuntimeError(f"ASGI message must be a dict with a 'type': {message!r}") from None
        expected = {
            "startup": ("lifespan.startup.complete", "lifespan.startup.failed"),
            "shutdown": ("lifespan.shutdown.complete", "lifespan.shutdown.failed"),
        }.get(self._phase, ())
        if kind not in expected:
            if not str(kind).startswith("lifespan."):
                self._foreign = True
            raise RuntimeError(f"unexpected ASGI lifespan message {kind!r} during {self._phase}")
        self._settle(message)

    def _speaks_lifespan(self) -> bool:
        """Whether the app took part: read the start-up message and sent nothing else."""
        return self._started_receiving and not self._foreign

    def _settle(self, message: Message) -> None:
        if self._answer is not None and not self._answer.done():
            self._answer.set_result(message)


def _message(answer: Message, default: str) -> str:
    text = answer.get("message")
    return str(text) if text else default


def _one_line(exc: BaseException | None) -> str:
    if exc is None:
        return "nothing"
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
