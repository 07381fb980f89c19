"""What deciding costs: the bundled policies' evaluation per exchange, detectors excluded,
and one CEL ``expr`` condition for comparison."""
