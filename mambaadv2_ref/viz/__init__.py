"""Plots, widgets and the chapter set-up used by the book.

    chapter.py   the book's helpers: setup_chapter() (seeds, profile, device, scan backend),
                 show_source(), prose(), table() drawn alike in every notebook front end
    colab.py     the Colab set-up cell (its one pip source) and the optional mamba-ssm install
    plots.py     pure plotting functions that return matplotlib Figures
    widgets.py   thin ipywidgets wrappers around the pure functions (SSM and heatmap explorers)
"""
