"""A job module named by JOB_MODULES in a test (not an app's `jobs` module)."""

from liveprogress import job


@job("tests.extra")
def extra(progress):
    return "extra"
