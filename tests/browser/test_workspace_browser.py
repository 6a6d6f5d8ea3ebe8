"""The workspace in a real browser: log in, choose a project, JupyterLab opens without ways out."""

import pytest

pytestmark = [pytest.mark.docker, pytest.mark.browser]


def test_wrong_password_is_refused(browser, instance):
    page = browser.new_page()
    page.goto(f"{instance.url}/hub/login")
    page.fill("input[name=username]", "researcher")
    page.fill("input[name=password]", "not-the-password")
    page.click("input[type=submit], button[type=submit]")
    page.get_by_text("Invalid username or password").first.wait_for(timeout=15_000)
    assert "/hub/login" in page.url
    page.close()


def test_researcher_chooses_a_project_and_gets_a_locked_down_lab(login, instance, tmp_path):
    page = login("researcher")
    page.goto(f"{instance.url}/hub/spawn")
    # researcher is in two projects: the spawn form asks which one
    options = page.locator("select[name=project] option")
    assert sorted(options.all_inner_texts()) == ["Test project covid (covid)",
                                                 "Test project income (income)"]
    page.select_option("select[name=project]", "income")
    page.click("input[type=submit], button[type=submit]")
    page.wait_for_url("**/user/researcher/lab**", timeout=120_000)
    page.wait_for_selector(".jp-LauncherCard, .jp-DirListing-item", timeout=60_000)
    page.screenshot(path=str(tmp_path / "lab.png"))
    # the file browser shows the starter notebook
    assert page.locator(".jp-DirListing-itemText", has_text="Start here.ipynb").count() == 1
    # right-click menu of a file: no Download, no Open in New Browser Tab, no Copy Download Link
    page.locator(".jp-DirListing-itemText", has_text="Start here.ipynb").click(button="right")
    page.wait_for_selector(".lm-Menu-content")
    menu = page.locator(".lm-Menu-content").inner_text()
    assert "Open" in menu  # the menu is there ...
    for banned in ("Download", "Open in New Browser Tab", "Copy Download Link"):
        assert banned not in menu, menu  # ... without the ways out
    page.keyboard.press("Escape")
    # File menu: no "Download", no "Save and Export Notebook As"
    page.locator(".lm-MenuBar-itemLabel", has_text="File").click()
    file_menu = page.locator(".lm-Menu-content").first.inner_text()
    assert "Download" not in file_menu and "Export" not in file_menu, file_menu
    page.keyboard.press("Escape")
    # the default server was started for the chosen project
    c = instance.docker.containers.get(f"{instance.prefix}-researcher")
    assert c.labels["org.tw.project"] == "income"
    instance.request("DELETE", "/hub/api/users/researcher/server", instance.token("researcher"))


def test_single_project_researcher_starts_without_a_form(login, instance):
    page = login("researcher2")
    page.goto(f"{instance.url}/hub/spawn")
    page.wait_for_url("**/user/researcher2/lab**", timeout=120_000)
    page.wait_for_selector(".jp-DirListing-item", timeout=60_000)
    assert page.locator(".jp-DirListing-itemText", has_text="Start here.ipynb").count() == 1
    instance.request("DELETE", "/hub/api/users/researcher2/server", instance.token("researcher2"))
