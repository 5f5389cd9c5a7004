"""``python -m pila``: the ``pila`` command.

So ``torchrun --nproc-per-node 8 -m pila prepare …`` works.
"""

from pila.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
