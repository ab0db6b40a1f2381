"""Reports rendered from result JSON: terminal tables, self-contained HTML (Jinja2 templates in
``templates/``), JUnit XML and Markdown."""
