"""`python -m openft.engine.peer`: one of ranks 1..n-1 of a multi-process run (see distributed.py)."""

from openft.engine.distributed import peer_main

if __name__ == "__main__":
    peer_main()
