"""retcodec.report.html."""
