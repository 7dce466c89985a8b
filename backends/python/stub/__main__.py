"""`python -m naiad.backends.python.stub`: see the package's docstring."""

from .process import main

main()
