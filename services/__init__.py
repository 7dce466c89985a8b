"""Built-in naiad services. Each subpackage is one service; services never import each other."""
