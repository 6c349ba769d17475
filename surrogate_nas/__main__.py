from surrogate_nas.cli.main import main

raise SystemExit(main())
