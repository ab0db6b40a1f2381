"""Reports: terminal tables, self-contained HTML pages (Jinja2 templates in ``templates/``)."""
