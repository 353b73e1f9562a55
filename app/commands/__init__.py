"""The ``kws`` subcommands, one module each with ``register(subparsers)``; they are listed, in
the order ``kws --help`` shows them, in :data:`bnnkws.app.cli.COMMAND_MODULES`. Each keeps its
heavy imports inside the function that runs it, so ``kws --help`` stays instant.
"""
