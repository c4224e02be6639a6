from ramir.cli import main

raise SystemExit(main())
