"""Reports rendered from result JSON: terminal tables, HTML, JUnit XML and Markdown."""
