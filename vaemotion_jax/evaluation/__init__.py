"""Host-side evaluation pieces: prompts, answer scoring, the paper's tables, result files.

  prompts  AIR-Bench Foundation's official prompt, our ArtEmoBenchmark prompt, loading items
  scoring  letter extraction (AIR-Bench's rule, a strict rule), option log-likelihood choice,
           `Prediction`, accuracy per AIR-Bench subset / ArtEmo (modality, category)
  tables   Table 2 (ArtEmoBenchmark) rows and Table 1 (AIR-Bench) columns, as dicts and text
  report   summaries, the results JSON with every prediction, and a CLI re-printing tables
  emer     open-vocabulary emotion words (EMER style): synonym clusters, set-level accuracy and
           recall, EMER-style label files
"""
