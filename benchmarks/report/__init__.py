"""The leaderboard's reporting pipeline, one module per stage; data flow one way and a stage imports
only the stages below it:

    columns   the column registry: every column's key, label, format, direction and meaning
    rows      records -> one row per run (the only code that reads record fields)
    stats     best run of a sweep, settings every mixer has whole, bootstrap, thresholds
    tables    rows -> the page's tables (tidy frames; wide only where a table is shown)
    findings  tables -> sentences, every number and threshold from the tables and `stats`
    render    tables and sentences -> Markdown, HTML and the page

`benchmarks.leaderboard.build` runs them in order.
"""
