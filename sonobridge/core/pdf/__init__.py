"""The printable report: a signed DiagnosticReport as a Chinese ultrasound report PDF
(``report.py``; the layout is the package data ``report.html``)."""
