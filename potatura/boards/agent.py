"""`python -m potatura.boards.agent`: the board agent lives in potatura.deploy.agent (this name forwards to it)."""

from potatura.deploy.agent import main

if __name__ == "__main__":
    raise SystemExit(main())
