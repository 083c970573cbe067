from mipay_bulk.cli import main

raise SystemExit(main())
