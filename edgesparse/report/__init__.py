"""What a person and a script read about a build: report.json (`document`), the pages (`html`, `templates/`)
and the one formatting vocabulary both the pages and the terminal use (`format`)."""

__all__: list[str] = []
