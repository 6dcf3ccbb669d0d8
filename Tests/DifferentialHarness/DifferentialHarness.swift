import PageSpace
