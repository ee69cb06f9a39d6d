"""A small real-looking repository (two Python modules and a Markdown guide) that the
search tests index, shared by the build, query and crash tests."""

from __future__ import annotations

from pathlib import Path

FILES = {
    "pkg/jsonutil.py": '''
def parse_json(text):
    """Parse a JSON document from a string."""
    import json
    return json.loads(text)


def reverse_list(items):
    """Return the items in reverse order."""
    return items[::-1]
''',
    "pkg/mail.py": '''
def send_email(to, subject, body):
    """Send an email message over SMTP."""
    import smtplib
    with smtplib.SMTP("localhost") as server:
        server.sendmail("me@example.com", [to], f"Subject: {subject}\\n\\n{body}")
''',
    "docs/guide.md": "# Cooking\n\nBoil the pasta for ten minutes.\n\n# Gardening\n\n"
    "Water the tomatoes every morning.\n",
}


def write_repo(root: Path) -> Path:
    """FILES written under `root`; `root`."""
    for name, text in FILES.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root
