from surrogate_nas.cli import main

raise SystemExit(main())
