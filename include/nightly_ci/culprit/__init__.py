"""Finding the commit that broke a test, verified by running it: the `nightly_ci_culprit`
DAG's own logic (the search, the verdicts, the finding). Its builds and test runs are the
build and suites stages' operators, put together by the DAG's composer."""
