"""The `edgesparse` command line: commands (`commands`), terminal tables (`render`) and progress (`progress`)."""

__all__: list[str] = []
