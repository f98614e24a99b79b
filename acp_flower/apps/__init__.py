"""Flower drivers: ServerApp / ClientApp (``flower`` and ``ray`` transports) and the launcher."""
