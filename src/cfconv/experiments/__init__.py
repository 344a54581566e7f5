"""Small experiments behind `cfconv` subcommands."""
