"""The report stage: the results table, night over night, the verdict and Slack."""
