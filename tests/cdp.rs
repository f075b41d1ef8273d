//! Chromium's DevTools protocol over a pipe (`--remote-debugging-pipe`): next commit.
