"""One module per subcommand; each has `register(subparsers)` and imports TensorFlow only inside the command."""
