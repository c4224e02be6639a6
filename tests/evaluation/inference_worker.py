"""Run by the scale tests, alone or under ``torchrun``: ``ramir.cli.main`` with a fault.

    python inference_worker.py [--die-at N] [--die-rank R] [--half-written] -- ARGS...

``--die-at N``: the process of rank R (default every rank) kills itself with SIGKILL
(no clean-up, like ``kill -9`` or a machine lost) when it is about to encode its N-th
image; with ``--half-written`` it first writes half of that image's bytes to the file
being encoded, as a kill in the middle of a write would.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--die-at", type=int, default=0)
    p.add_argument("--die-rank", type=int, default=None)
    p.add_argument("--half-written", action="store_true")
    p.add_argument("args", nargs=argparse.REMAINDER)
    a = p.parse_args()
    args = a.args[1:] if a.args[:1] == ["--"] else a.args
    rank = int(os.environ.get("RANK", "0"))
    if a.die_at and a.die_rank in (None, rank):
        import ramir.data.write as io

        real = io._encode
        count = [0]

        def encode(tmp, data, *rest):
            count[0] += 1
            if count[0] == a.die_at:
                if a.half_written:
                    real(tmp, data, *rest)
                    body = tmp.read_bytes()
                    tmp.write_bytes(body[: len(body) // 2])
                os.kill(os.getpid(), signal.SIGKILL)
            return real(tmp, data, *rest)

        io._encode = encode
    from ramir.cli import main as cli

    return cli(args)


if __name__ == "__main__":
    sys.exit(main())
