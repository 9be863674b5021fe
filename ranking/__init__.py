"""Ranking library: interaction matrices, recommenders, evaluation and model selection.

Used by the recommender service and the training worker, so it belongs to neither: it imports
``shared`` only, never ``services``, ``workers`` or fastapi.
"""
