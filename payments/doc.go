// Package payments defines what every payment rail shares: the price of a call, the offer a
// rail adds to a 402, the authorization a verified credential yields, and the settlement that
// moves the money. The gateway talks to rails only through the Rail interface.
package payments
