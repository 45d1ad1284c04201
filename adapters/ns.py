"""XML namespaces, in one place. Elements are built with these and ``lxml.builder.ElementMaker``."""

RSM = "urn:un:unece:uncefact:data:standard:CITESEPermit:2"
RAM = "urn:un:unece:uncefact:data:draft:ReusableAggregateBusinessInformationEntity:1"
CBFSHIP = "urn:un:unece:uncefact:data:draft:CBFShip:1"  # EPT v1
EPIX_V1 = "urn:CitesDataExchange/v1/"
EPIX_V2 = "urn:CitesDataExchange/v2/"
SOAP11 = "http://schemas.xmlsoap.org/soap/envelope/"
DS = "http://www.w3.org/2000/09/xmldsig#"
EXCHANGE = "urn:epix-gateway:exchange:1"  # our hop envelope, receipt and error

NSMAP_PERMIT = {"rsm": RSM, "ram": RAM}
