"""Studies outside the pipeline's data flow, for the scripts that print figures and the
tests that check them: the paper's convex check (:mod:`~dmm.studies.convex`) and
reference predictions made from real oracles (:mod:`~dmm.studies.references`)."""
