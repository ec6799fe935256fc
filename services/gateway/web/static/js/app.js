// The dashboard's entry point: registers the pages and starts the router.

import { session } from "./api.js";
import { refreshTimes } from "./components.js";
import { navigate, route, startRouter } from "./router.js";
import { renderFiles } from "./pages/files.js";
import { renderJobDetail } from "./pages/job_detail.js";
import { renderJobs } from "./pages/jobs.js";
import { renderNewJob } from "./pages/new_job.js";
import { renderSignIn } from "./pages/signin.js";
import { renderViewer } from "./pages/viewer.js";
import { renderWorkers } from "./pages/workers.js";

route("/signin", renderSignIn, { title: "Sign in", public: true });
route("/", renderJobs, { nav: "jobs", title: "Jobs" });
route("/jobs", renderJobs, { nav: "jobs", title: "Jobs" });
route("/jobs/new", renderNewJob, { nav: "new", title: "New job" });
route("/jobs/:id", renderJobDetail, { nav: "jobs", title: "Job" });
route("/files", renderFiles, { nav: "files", title: "Files" });
route("/files/view", renderViewer, { nav: "files", title: "File" });
route("/workers", renderWorkers, { nav: "workers", title: "Workers" });

document.getElementById("sign-out").addEventListener("click", () => {
  session.signOut();
  navigate("/signin");
});

// Any 401 (key revoked, or the tab's session expired): back to sign-in, then back here.
window.addEventListener("rondo:unauthorized", () => {
  session.signOut();
  const here = location.pathname + location.search;
  if (location.pathname !== "/signin") navigate(`/signin?next=${encodeURIComponent(here)}`);
});

startRouter(document.getElementById("main"));
setInterval(refreshTimes, 20_000);
