"""The demo site's app: the original example's timed process, a batch of them, and
a CSV import, with their pages. None of it ships in the liveprogress wheel."""
