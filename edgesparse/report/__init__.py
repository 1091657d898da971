"""What a person and a script read about a build: report.json (`document`), the pages (`html`, `templates/`),
the one formatting vocabulary both the pages and the terminal use (`format`), and the figures of report.json's
DECODE "compression" section that the card, the terminal summary and the sweep all show (`compression`)."""

__all__: list[str] = []
