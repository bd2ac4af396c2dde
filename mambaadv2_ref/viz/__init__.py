"""Plots, widgets and the chapter set-up used by the book.

    chapter.py   setup_chapter(): seeds, profile, device and scan backend, printed on one line
    plots.py     pure plotting functions that return matplotlib Figures
    widgets.py   thin ipywidgets wrappers around the pure functions (SSM and heatmap explorers)
"""
