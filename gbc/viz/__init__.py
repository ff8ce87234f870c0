"""Pictures of GBC graphs: graphs over their images, and statistics of graph sets.

``render_graph(graph, image=None, highlight=None)`` draws the boxes over the image beside the
graph itself; ``gbc.viz.stats_plot.plot_stats`` draws histograms of a set of graphs. Drawing
uses PIL and matplotlib, imported only when a picture is made.
"""

from gbc.viz.render import draw_boxes, draw_graph, render_graph

__all__ = ["draw_boxes", "draw_graph", "render_graph"]
