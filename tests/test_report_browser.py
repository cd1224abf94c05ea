"""The HTML report in a real browser (headless Chromium): its tables and images are there and
decoded, nothing overflows the page sideways, and every link to a run's files resolves."""

import json
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote

import pytest
from test_report import fake_run, make_cfg

from ugpcl.report import figures, tables
from ugpcl.report.build import write_report

BROWSER = next((shutil.which(b) for b in ("chromium", "chromium-browser", "google-chrome") if shutil.which(b)), None)
pytestmark = pytest.mark.skipif(BROWSER is None, reason="no Chromium on this machine (Debian: apt-get install "
                                                        "chromium; .ci/run installs it)")
WIDTH = 1440
# Runs once the page has loaded, and writes what the browser made of it into the page.
PROBE = """<script>
window.addEventListener("load", () => {
  const images = [...document.images];
  const out = {
    tables: [...document.querySelectorAll("table")].map(t => t.id),
    rows: [...document.querySelectorAll("table")].map(t => t.rows.length),
    images: images.length,
    decoded: images.filter(i => i.complete && i.naturalWidth > 0).length,
    pageWidth: document.documentElement.scrollWidth,
    viewport: window.innerWidth,
  };
  const pre = document.createElement("pre");
  pre.id = "probe";
  pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
});
</script>"""


def chromium(*args: str, cwd: Path) -> str:
    profile = cwd / "chromium-profile"
    profile.mkdir(exist_ok=True)
    cmd = [BROWSER, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync", "--hide-scrollbars",
           f"--user-data-dir={profile}", f"--window-size={WIDTH},1600", *args]
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=120, check=True).stdout


class Links(HTMLParser):
    def __init__(self):
        super().__init__()
        self.hrefs = []

    def handle_starttag(self, tag, attrs):
        if tag == "a":
            self.hrefs.append(dict(attrs)["href"])


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("browser")
    cfg = make_cfg(tmp_path, "paper", "experiments.seeds=[1, 2]")
    for seed, (ours, mt) in enumerate([(0.88, 0.80), (0.90, 0.82)], start=1):
        fake_run(cfg, "acdc136_ugpcl", seed, ours)
        fake_run(cfg, "acdc136_mt", seed, mt, spread=0.5)
    fake_run(cfg, "isic91_supervised", 1, 0.60)
    figures.make_figures(cfg, "cpu")   # no prepared data: Figures 3 and 4 say so; curves from the logs
    return cfg, write_report(cfg)["html"]


def test_the_browser_shows_every_table_and_image(report, tmp_path):
    cfg, page = report
    probed = tmp_path / "report.html"
    probed.write_text(page.read_text().replace("</body>", PROBE + "</body>"))
    dom = chromium("--virtual-time-budget=10000", "--dump-dom", probed.as_uri(), cwd=tmp_path)
    found = json.loads(re.search(r'<pre id="probe">(.*?)</pre>', dom, re.S)[1].replace("&quot;", '"'))
    assert {"table1", "ordering", "per-class-acdc-136", "paired", "table2", "table3", "runs", "settings",
            "choices"} <= set(found["tables"])
    rows = dict(zip(found["tables"], found["rows"]))
    assert rows["table1"] == 1 + 32 and rows["runs"] == 1 + 40 * 2 and rows["paired"] == 1 + 1
    assert rows["per-class-acdc-136"] == 2 + 8   # two header rows (class, metric), a row per method
    assert found["images"] == 7 == found["decoded"]   # three bar charts, Figures 3 and 4, curves, loss terms
    assert found["pageWidth"] <= found["viewport"], "the page scrolls sideways"

    shot = tmp_path / "shot.png"
    chromium(f"--screenshot={shot}", page.as_uri(), cwd=tmp_path)
    import matplotlib.image

    pixels = matplotlib.image.imread(shot)
    assert pixels.shape[:2] == (1600, WIDTH) and pixels.std() > 0.05   # something is drawn


def test_every_link_resolves(report):
    cfg, page = report
    parser = Links()
    parser.feed(page.read_text())
    anchors = set(re.findall(r' id="([^"]+)"', page.read_text()))
    files = [h for h in parser.hrefs if not h.startswith("#")]
    assert any(h.endswith("/config.yaml") for h in files) and any(h.endswith("/log.jsonl") for h in files)
    for href in parser.hrefs:
        if href.startswith("#"):
            assert href[1:] in anchors, href
        else:
            assert (page.parent / unquote(href)).exists(), href
    assert tables.reports_dir(cfg) == page.parent
