module example.com/slipway/hello

go 1.19
