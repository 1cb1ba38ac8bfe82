"""The reports app's tests: ``python manage.py test``.

The job runs to its end with liveprogress.testing (no server, no channel
layer); the views run under Django's AsyncClient, an ASGI request as a server
would make, so the job they start runs in this process.
"""

import asyncio

from django.core.management import call_command
from django.test import AsyncClient, SimpleTestCase, TestCase, TransactionTestCase
from liveprogress.testing import run_job

from .jobs import count_rows


class CountRowsJobTests(TestCase):
    def test_counts_every_row_and_logs_the_count(self):
        run = run_job(count_rows, n=25)

        self.assertEqual(run.status, "succeeded")
        self.assertEqual(run.result, {"rows": 25})
        self.assertEqual(run.error, "")
        self.assertEqual((run.state["current"], run.state["total"]), (25, 25))
        self.assertEqual(run.state["percent"], 100)
        self.assertEqual([line["text"] for line in run.logs], ["counted 25 rows"])
        self.assertEqual(run.job.kind, "reports.count")

    def test_every_state_moves_forward_and_the_last_is_the_final_one(self):
        run = run_job(count_rows, n=10)

        seqs = [state["seq"] for state in run.states]
        self.assertEqual(seqs, sorted(set(seqs)))
        percents = [state["percent"] for state in run.states if state["percent"] is not None]
        self.assertEqual(percents, sorted(percents))
        self.assertEqual(run.states[-1], run.state)
        self.assertTrue(all(s["status"] in ("queued", "running") for s in run.states[:-1]))


class CountViewTests(TransactionTestCase):
    # Not TestCase: the job the view starts writes from a thread of its own,
    # which must not wait on the test's open transaction.

    async def wait_for_end(self, client: AsyncClient, job_id: str) -> dict:
        async with asyncio.timeout(10):
            while True:
                response = await client.get(f"/api/jobs/{job_id}/")
                self.assertEqual(response.status_code, 200)
                state = response.json()
                if state["status"] not in ("queued", "running"):
                    return state
                await asyncio.sleep(0.05)

    async def test_a_start_redirects_to_the_job_owned_by_the_visitor_s_session(self):
        client = AsyncClient()
        self.assertEqual((await client.get("/")).status_code, 200)

        response = await client.post("/count/", {"n": 3})

        self.assertEqual(response.status_code, 302)
        job_id = response["Location"].strip("/").rsplit("/", 1)[-1]
        self.assertEqual(response["Location"], f"/count/{job_id}/")
        page = await client.get(response["Location"])
        self.assertEqual(page.status_code, 200)
        html = page.content.decode()
        self.assertIn(f'data-lp-job="{job_id}"', html)
        self.assertIn("liveprogress/liveprogress.css", html)
        # Another visitor (another session) does not see it.
        self.assertEqual((await AsyncClient().get(response["Location"])).status_code, 404)

        final = await self.wait_for_end(client, job_id)
        self.assertEqual(final["status"], "succeeded", final)
        self.assertEqual(final["result"], {"rows": 3})

    async def test_a_bad_count_starts_nothing(self):
        response = await AsyncClient().post("/count/", {"n": 0})

        self.assertEqual(response.status_code, 400)
        jobs = (await AsyncClient().get("/api/jobs/")).json()["jobs"]
        self.assertEqual(jobs, [])


class CheckTests(SimpleTestCase):
    def test_the_site_passes_django_s_checks_and_liveprogress_s(self):
        call_command("check", fail_level="WARNING")
