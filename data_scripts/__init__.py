"""Download and prepare the open-vocabulary benchmarks (:mod:`hyro_edu.data.benchmarks`), HVSA's and tree alignment's datasets.

Entry point (from the repository root)::

    python -m data_scripts.prepare --datasets coco_stuff ade20k_150 ... [--root DIR] [--dry-run]

Modules: :mod:`.download` (resumable, checksummed HTTP downloads), :mod:`.archives` (extraction
that refuses truncated or unsafe archives), :mod:`.common` (what every preparation shares),
one module per dataset family (:mod:`.coco_stuff`, :mod:`.ade20k`, :mod:`.pascal_context`,
:mod:`.voc`), :mod:`.vocabularies` (CAT-Seg's evaluation name lists, pinned and checksummed),
:mod:`.prepare` (the command line) and :mod:`.fixtures` (miniature raw datasets in
the real on-disk formats, for tests and for trying the pipeline without downloading;
:mod:`.fixture_files` holds the image and archive writers the fixture builders share).
HVSA's datasets (read by :mod:`hyro_edu.data.hierarchical_datasets`): :mod:`.hvsa_common`,
:mod:`.imclef07`, :mod:`.cityscapes`, :mod:`.human_parsing`, :mod:`.tiered_imagenet` and
:mod:`.hvsa_fixtures`. Tree alignment's datasets (read by
:mod:`hyro_edu.data.taxonomic_datasets`): :mod:`.taxonomic_common` (ProTeCt's files read
safely, the driver), :mod:`.taxonomic` and :mod:`.taxonomic_fixtures`.
"""
