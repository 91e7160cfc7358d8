"""The tests' own Chromium driver (tests/browser.py): a click lands on the element it names, even
while a menu is still opening over it (the triage page's test once clicked Browse -> Events)."""

from __future__ import annotations

import base64

from tests.browser import Browser

# A menu whose entries are covered for 0.6 s by the entry next to them, as an opening menu's
# entries are while they slide into place; the page's title says which entry was clicked.
PAGE = """<!doctype html><html><body style="margin:0">
<a id="target" href="#triage" style="position:absolute;top:100px;left:100px;width:200px;height:40px">Nightly CI triage</a>
<a id="cover" href="#events" style="position:absolute;top:90px;left:90px;width:220px;height:60px;background:#eee">Events</a>
<script>
for (const a of document.querySelectorAll('a')) a.onclick = (e) => { e.preventDefault(); document.title = a.id };
setTimeout(() => document.getElementById('cover').style.top = '300px', 600);
</script>
</body></html>"""


def test_a_click_waits_until_nothing_covers_the_element() -> None:
    with Browser() as b:
        b.goto("data:text/html;base64," + base64.b64encode(PAGE.encode()).decode())
        b.click("document.getElementById('target')", "the menu entry")
        assert b.wait("document.title", what="a click") == "target"
