"""The phases of an HTTP/1.1 connection, and which deadline each one runs under.

A connection is in exactly one phase; the facts that can hold at the same time (a body
still arriving, a refusal waiting to be sent, the client having closed its side) are
separate fields of the connection, not phases.

=========  ==========================================================  ==================
phase      the connection is ...                                       its read deadline
=========  ==========================================================  ==================
IDLE       waiting for the next request (keep-alive, or just opened)   keep-alive timeout
HEAD       receiving a request head, nothing else in progress          header timeout
BUSY       answering requests (more may be queued or arriving)         none of its own
REFUSING   holding an error answer until earlier responses are out     none of its own
LINGERING  half-closed after its last answer, discarding input         linger time
UPGRADED   carrying another protocol's bytes (a session owns them)     the session's
CLOSED     closed, or closing once the rest of its output is sent      none
=========  ==========================================================  ==================

While a request body arrives, the body timeout runs beside the phase's deadline; while
the client does not read, the flow's write deadline does.
"""

from __future__ import annotations

from typing import Final

IDLE: Final = 0
HEAD: Final = 1
BUSY: Final = 2
REFUSING: Final = 3
LINGERING: Final = 4
UPGRADED: Final = 5
CLOSED: Final = 6

NAMES: Final = ("IDLE", "HEAD", "BUSY", "REFUSING", "LINGERING", "UPGRADED", "CLOSED")

# Phases in which bytes from the client are parsed as HTTP.
PARSING: Final = frozenset({IDLE, HEAD, BUSY})

# nginx lingering_timeout is 5s and lingering_time 30s; a short linger is enough for the
# client to read the error before the close (a close with unread input sends a reset).
LINGER_SECONDS: Final = 2.0
