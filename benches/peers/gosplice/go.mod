module gosplice

go 1.19
