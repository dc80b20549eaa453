"""Run the official KiteTicker against a server and print what it saw as one JSON line.

Usage: python kiteticker_client.py ROOT TOKENS(comma) MODE MIN_TICKS
Runs in its own process because KiteTicker owns Twisted's global reactor.
Prints {"ticks": [...KiteTicker dicts...], "raw": [hex of each binary message],
"connects": n, "errors": [...]} and exits.
"""

from __future__ import annotations

import json
import sys
import threading


def main() -> None:
    root, tokens_arg, mode, min_ticks = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    from kiteconnect import KiteTicker
    from twisted.internet import reactor

    tokens = [int(t) for t in tokens_arg.split(",")]
    kws = KiteTicker("anykey", "anytoken", root=root, reconnect_max_tries=3)
    seen: dict = {"ticks": [], "raw": [], "connects": 0, "errors": [], "texts": []}
    done = threading.Event()

    def on_connect(ws, response):  # noqa: ANN001
        seen["connects"] += 1
        ws.subscribe(tokens)
        ws.set_mode(mode, tokens)

    def on_message(ws, payload, is_binary):  # noqa: ANN001
        if is_binary and len(payload) > 4:
            seen["raw"].append(payload.hex())
        elif not is_binary:
            seen["texts"].append(payload.decode())

    def on_ticks(ws, ticks):  # noqa: ANN001
        seen["ticks"].extend(ticks)
        if sum(1 for t in seen["ticks"] if t["mode"] == mode) >= min_ticks:
            done.set()

    def on_error(ws, code, reason):  # noqa: ANN001
        seen["errors"].append(f"{code} {reason}")

    kws.on_connect, kws.on_message, kws.on_ticks, kws.on_error = on_connect, on_message, on_ticks, on_error
    kws.connect(threaded=True)
    done.wait(30)
    kws.stop_retry()
    reactor.callFromThread(kws.close)
    print(json.dumps(seen, default=lambda o: o.timestamp() if hasattr(o, "timestamp") else str(o)))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
