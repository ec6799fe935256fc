"""The web dashboard in headless Chromium on a real local stack (a package: its stack and
browser are torn down as soon as its last test ends)."""
