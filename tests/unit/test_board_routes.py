"""The metrics board's route-label table: entries named by the supervisor, found by the
workers, and what happens when a reload brings more routes than it has room for."""

from __future__ import annotations

from bastion.observe.board import OTHER_ROUTE, ROUTE_NAME_BYTES, Board


def test_routes_keep_their_entries_and_new_ones_take_free_ones() -> None:
    board = Board(["/a", "unmatched"], 1, spare=2)
    try:
        a, unmatched = board.route_index("/a"), board.route_index("unmatched")
        assert board.route_names()[a] == "/a"
        board.name_routes(["/b", "/a", "unmatched", "/c", "/d"])  # two free entries
        names = board.route_names()
        assert board.route_index("/a") == a and board.route_index("unmatched") == unmatched
        assert names[board.route_index("/b")] == "/b"
        assert names[board.route_index("/c")] == "/c"
        # no room left: counted under "other", the last entry
        assert board.route_index("/d") == board.layout.capacity - 1
        assert names[-1] == OTHER_ROUTE
        assert len({a, unmatched, board.route_index("/b"), board.route_index("/c")}) == 4
    finally:
        board.close()


def test_a_long_label_is_cut_to_whole_characters() -> None:
    long = "/" + "é" * ROUTE_NAME_BYTES
    board = Board([long], 1, spare=1)
    try:
        (name,) = [n for n in board.route_names() if n and n != OTHER_ROUTE]
        assert long.startswith(name) and len(name.encode()) <= ROUTE_NAME_BYTES
        assert board.route_index(long) == board.route_names().index(name)
    finally:
        board.close()
